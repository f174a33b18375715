"""Access that holds against a local or a remote guesser (issue 11): the
data folder's modes against another local user, the admin socket's peer
check, the one login limiter shared by SMTP, IMAP, POP3 and LDAP, and the
sender rules of authenticated submission.

Local-user tests run commands as `nobody` with runuser (the suite runs as
root, as CI does).
"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import shutil
import stat
import subprocess
import threading
import urllib.request
from pathlib import Path

import smtplib

import pytest

from mxlib import BIN, DEMO, HOST, IO_TIMEOUT, Server, insecure_tls
from test_imap import ImapServer

NOBODY = "nobody"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", NOBODY, "--", *argv], capture_output=True, timeout=60)


def open_path_to(s: Server):
    """Lets other users walk down to the data folder (the temporary base
    folder is 0700 by itself), so that only the data folder's own modes
    stand between `nobody` and the store."""
    os.chmod(s.base, 0o755)


def test_the_data_folder_is_private_to_the_service(make_server):
    s = make_server()
    open_path_to(s)
    with smtplib.SMTP("127.0.0.1", s.mx_port, timeout=15) as c:
        c.sendmail("a@remote.example", [DEMO], b"Subject: m\r\n\r\nbody\r\n")
    assert mode(s.data) == 0o700
    files = [p for p in s.data.rglob("*") if not p.is_symlink()]
    assert any(p.name == "meta.redb" for p in files)
    assert any(p.parent.name == "msg" and p.is_file() for p in files), files
    for p in files:
        assert mode(p) == (0o700 if p.is_dir() else 0o600), (p, oct(mode(p)))
    # Another local user cannot read the store, nor list the folder.
    assert as_nobody("test", "-x", str(s.base)).returncode == 0, "the walk down is open"
    r = as_nobody("cat", str(s.data / "meta.redb"))
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    assert as_nobody("ls", str(s.data)).returncode != 0
    # Even with the folder opened, each file keeps it out.
    os.chmod(s.data, 0o755)
    r = as_nobody("cat", str(s.data / "meta.redb"))
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    os.chmod(s.data, 0o700)


def test_wrong_modes_are_reported_by_doctor_and_repaired_at_start(make_server):
    s = make_server()
    s.stop()
    os.chmod(s.data, 0o755)
    os.chmod(s.data / "meta.redb", 0o644)
    r = s.mx_run("doctor")
    out = r.stdout.decode()
    line = next(l for l in out.splitlines() if "file modes" in l)
    assert line.startswith("FAIL"), out
    assert f"{s.data}/meta.redb is 0644, should be 0600" in line, line
    assert f"{s.data} is 0755, should be 0700" in line, line
    s.start()
    assert mode(s.data) == 0o700
    assert mode(s.data / "meta.redb") == 0o600
    assert "file mode repaired" in s.stderr_tail()
    out = s.mx_run("doctor").stdout.decode()
    line = next(l for l in out.splitlines() if "file modes" in l)
    assert line.startswith("PASS"), out


def test_the_admin_socket_refuses_another_user(make_server):
    """SO_PEERCRED: even with the socket's mode opened, a user that is
    neither root nor the service's own is refused."""
    s = make_server()
    open_path_to(s)
    os.chmod(s.data, 0o711)
    os.chmod(s.data / "admin.sock", 0o666)
    os.chmod(s.config, 0o644)
    # A checkout under a private folder (root's home is 0700 on a fresh
    # Debian) is out of nobody's reach: a copy of the binary beside the
    # data folder is not.
    exe = s.base / "mxrack"
    shutil.copyfile(BIN, exe)
    os.chmod(exe, 0o755)
    r = as_nobody(str(exe), "--config", str(s.config), "domain", "list")
    assert r.returncode != 0, r
    assert b"only root or the service's own user" in r.stderr, r
    # Root still administers.
    assert b"example.net" in s.mx("domain", "list")


# --- the one login limiter, with smtplib, imaplib, poplib and ldapwhoami ------------------


def auth_server(**auth) -> ImapServer:
    """A server with IMAP, POP3, LDAP, submissions and the web port, [auth]
    as given (no failure delay unless given), and mailboxes a..e, mine."""
    s = ImapServer()
    s.auth = {"failure_delay_ms": 0, **auth}
    s.use_web()
    s.write_config()
    s.start()
    for name in ["a", "b", "c", "d", "e", "mine", "phone", "colleague"]:
        s.add_mailbox(f"{name}@example.net", f"pw-{name}-0123")
    s.mx("ldap", "passwd", "colleague@example.net", "--password", "ldap-colleague")
    return s


@pytest.fixture
def auth_servers():
    made: list[Server] = []

    def make(**auth) -> ImapServer:
        s = auth_server(**auth)
        made.append(s)
        return s

    yield make
    for s in made:
        s.teardown()


def pw(name: str) -> str:
    return f"pw-{name}-0123"


def auth_plain(c: smtplib.SMTP, user: str, password: str):
    """One AUTH PLAIN (smtplib's login() would try LOGIN after a 535 too,
    which is a second attempt)."""
    c.user, c.password = user, password
    return c.auth("PLAIN", c.auth_plain)


def smtp_login(s: Server, user: str, password: str) -> tuple[int, str]:
    with s.submissions() as c:
        c.ehlo()
        try:
            code, text = auth_plain(c, user, password)
        except smtplib.SMTPResponseException as e:
            code, text = e.smtp_code, e.smtp_error
        return code, (text.decode() if isinstance(text, bytes) else str(text))


def imap_login(s: ImapServer, user: str, password: str) -> str:
    m = imaplib.IMAP4_SSL(HOST, s.imaps_port, ssl_context=insecure_tls(), timeout=IO_TIMEOUT)
    try:
        typ, data = m.login(user, password)
        return f"{typ} {data[0].decode()}"
    except imaplib.IMAP4.error as e:
        return f"NO {e}"
    finally:
        try:
            m.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def pop3_login(s: Server, user: str, password: str) -> str:
    p = poplib.POP3_SSL(HOST, s.pop3s_port, timeout=IO_TIMEOUT, context=insecure_tls())
    try:
        p.user(user)
        return p.pass_(password).decode()
    except poplib.error_proto as e:
        return e.args[0].decode()
    finally:
        p.close()


def ldap_bind(s: Server, name: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ldapwhoami", "-H", f"ldaps://{HOST}:{s.ldaps_port}", "-x",
         "-D", f"cn={name},ou=auth,dc=example,dc=net", "-w", password],
        capture_output=True, env=dict(os.environ, LDAPTLS_REQCERT="never"), timeout=60,
    )


def auth_metrics(s: Server) -> dict[tuple[str, str], float]:
    req = urllib.request.Request(f"https://{HOST}:{s.https_port}/metrics")
    with urllib.request.urlopen(req, context=insecure_tls(), timeout=IO_TIMEOUT) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'^mxrack_auth_attempts_total\{protocol="(\w+)",result="(\w+)"\} (\d+)$', text, re.M):
        out[(m[1], m[2])] = float(m[3])
    return out


def test_guessing_across_services_and_accounts_is_cut_off_at_the_network_budget(auth_servers):
    """The issue's exploit: a few wrong guesses for other mailboxes, then a
    good login as one's own, repeated, over every service. Successes give
    back only their own count: after the network budget (8) of failures,
    every service answers with its own temporary error, even for the right
    password of a mailbox that never failed."""
    s = auth_servers(network_attempts_max=8, account_attempts_max=100, pair_attempts_max=3)
    guess = [
        lambda u: smtp_login(s, u, "guess")[0] == 535,
        lambda u: "[AUTHENTICATIONFAILED]" in imap_login(s, u, "guess"),
        lambda u: pop3_login(s, u, "guess").startswith("-ERR [AUTH]"),
        lambda u: ldap_bind(s, u, "guess").returncode == 49,
    ]
    victims = ["a@example.net", "b@example.net", "c@example.net", "d@example.net"]
    failures = 0
    for round_ in range(2):
        for i, victim in enumerate(victims):
            assert guess[(i + round_) % 4](victim), (round_, victim)
            failures += 1
        # One good login as one's own mailbox (the old limiter's reset).
        code, _ = smtp_login(s, "mine@example.net", pw("mine"))
        if failures < 8:
            assert code == 235
    assert failures == 8
    # The network budget is spent: each service's temporary error.
    code, text = smtp_login(s, "e@example.net", pw("e"))
    assert (code, text.startswith("4.7.0")) == (454, True), (code, text)
    assert "[UNAVAILABLE]" in imap_login(s, "e@example.net", pw("e"))
    assert pop3_login(s, "e@example.net", pw("e")).startswith("-ERR [SYS/TEMP]")
    r = ldap_bind(s, "e@example.net", "x")
    assert r.returncode == 51 and b"too many bind attempts" in r.stderr, r
    m = auth_metrics(s)
    for proto in ["smtp", "imap", "pop3", "ldap"]:
        assert m[(proto, "limited")] >= 1, m
        assert m[(proto, "rejected")] >= 1, m
    assert m[("smtp", "accepted")] >= 1, m


def test_a_second_mailbox_still_logs_in_after_another_mailboxs_failures(auth_servers):
    """The office behind one NAT address: a phone with a stale password
    spends its own pair's budget (3); its retries are refused and count
    nowhere; every colleague keeps logging in, on every service."""
    s = auth_servers(network_attempts_max=10, account_attempts_max=100, pair_attempts_max=3)
    for _ in range(3):
        assert "AUTHENTICATIONFAILED" in imap_login(s, "phone@example.net", "stale")
    assert "[UNAVAILABLE]" in imap_login(s, "phone@example.net", pw("phone"))
    for _ in range(10):
        assert smtp_login(s, "phone@example.net", "stale")[0] == 454
    for _ in range(5):
        assert imap_login(s, "colleague@example.net", pw("colleague")).startswith("OK")
        assert smtp_login(s, "colleague@example.net", pw("colleague"))[0] == 235
        assert pop3_login(s, "colleague@example.net", pw("colleague")).startswith("+OK")
        assert ldap_bind(s, "colleague@example.net", "ldap-colleague").returncode == 0
    assert imap_login(s, "a@example.net", pw("a")).startswith("OK")


def test_100_parallel_auths_on_465_get_454_past_the_budget(make_server):
    """Counted when they start: of 100 AUTHs at once for one mailbox, only
    the pair budget's worth is checked (535); the rest get 454 4.7.0.
    All 100 come from 127.0.0.1, so the per-client connection cap (50 by
    default) is raised with the pool's: this tests the login limiter."""
    s = make_server(max_connections=200, max_connections_per_client=200)
    codes: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(100)

    def one():
        with smtplib.SMTP_SSL(HOST, s.submissions_port, local_hostname="e2e.test",
                              timeout=60, context=insecure_tls()) as c:
            c.ehlo()
            barrier.wait(timeout=60)
            try:
                auth_plain(c, DEMO, "guess")
                code = 235
            except smtplib.SMTPResponseException as e:
                code = e.smtp_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=one) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(codes) == 100
    assert codes.count(535) == 3, sorted(codes)
    assert codes.count(454) == 97, sorted(codes)
    # The right password is refused too, until the window passes.
    with s.submissions() as c:
        c.ehlo()
        with pytest.raises(smtplib.SMTPResponseException) as e:
            auth_plain(c, DEMO, s.password)
        assert e.value.smtp_code == 454
