"""Recovery (issue 12), with the real binary and real clients.

Mail is delivered by smtplib into several folders with flags (IMAP APPEND,
MOVE, STORE, EXPUNGE through imaplib); then meta.redb is deleted, replaced
by an older backup, or overwritten with garbage. The server refuses to start
on a folder with mail and no database, `mxrack reconstruct` rebuilds it, and
every message is read back over IMAP in its folder, with its UID, flags and
bytes.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import smtplib
import stat

import pytest

from mxlib import HOST, IO_TIMEOUT, insecure_tls
from test_imap import ImapServer

JO = "jo@recover.example"
JO_PW = "jo-recover-pw"


def imaps(s: ImapServer) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(HOST, s.imaps_port, ssl_context=insecure_tls(), timeout=IO_TIMEOUT)
    typ, _ = m.login(JO, JO_PW)
    assert typ == "OK"
    return m


def send(s: ImapServer, n: int, tag: str = "m"):
    with smtplib.SMTP(HOST, s.mx_port, timeout=IO_TIMEOUT) as c:
        for i in range(n):
            body = (
                f"From: a@remote.example\r\nTo: {JO}\r\nSubject: {tag} {i}\r\n"
                f"Message-ID: <{tag}-{i}@remote.example>\r\n\r\nbody {tag} {i}\r\n"
            )
            c.sendmail("a@remote.example", [JO], body.encode())


def view(s: ImapServer) -> dict:
    """Every folder: UIDVALIDITY and (UID, sorted flags, bytes) of each message."""
    m = imaps(s)
    try:
        typ, folders = m.list()
        assert typ == "OK"
        out = {}
        for line in folders:
            name = line.decode().rsplit(' "/" ', 1)[1].strip('"')
            typ, data = m.select(f'"{name}"', readonly=True)
            assert typ == "OK", (name, data)
            validity = m.response("UIDVALIDITY")[1][0]
            msgs = []
            typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
            if typ == "OK" and data and data[0] is not None:
                for item in data:
                    if not isinstance(item, tuple):
                        continue
                    head = item[0].decode()
                    uid = int(re.search(r"UID (\d+)", head).group(1))
                    flags = sorted(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split())
                    msgs.append((uid, flags, item[1]))
            out[name] = (validity, sorted(msgs))
        return out
    finally:
        try:
            m.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def fill(s: ImapServer):
    send(s, 5)
    m = imaps(s)
    try:
        assert m.create("Projects")[0] == "OK"
        assert m.append("Sent", r"(\Seen)", None, b"Subject: sent\r\n\r\nhello\r\n")[0] == "OK"
        m.select("INBOX")
        assert m.uid("STORE", "1", "+FLAGS", r"(\Flagged $Work)")[0] == "OK"
        assert m.uid("MOVE", "2", "Projects")[0] == "OK"
        assert m.uid("STORE", "3", "+FLAGS", r"(\Deleted)")[0] == "OK"
        assert m.expunge()[0] == "OK"
        assert m.uid("COPY", "4", "Trash")[0] == "OK"
    finally:
        m.logout()


def refused_with_hint(s: ImapServer):
    with pytest.raises(AssertionError, match="exited"):
        s.start()
    assert "mxrack reconstruct" in s.stderr_tail(4000)


@pytest.fixture
def srv():
    s = ImapServer()
    s.start()
    s.add_domain("recover.example", "recoveracct")
    s.add_mailbox(JO, JO_PW)
    try:
        yield s
    finally:
        s.teardown()


def test_deleted_database_is_refused_then_reconstructed(srv):
    fill(srv)
    before = view(srv)
    assert set(before) >= {"INBOX", "Projects", "Sent", "Trash"}
    srv.stop()
    files = sorted(os.listdir(srv.data / "msg"))
    os.remove(srv.data / "meta.redb")
    refused_with_hint(srv)
    # The refusal touched nothing.
    assert not (srv.data / "meta.redb").exists()
    assert sorted(os.listdir(srv.data / "msg")) == files

    out = srv.mx("reconstruct").decode()
    assert "reconstructed from journal" in out, out
    srv.start()
    assert view(srv) == before
    assert "no problems found" in srv.mx("verify").decode()
    # Logins, domains and new mail work as before.
    send(srv, 1, "after")
    assert len(view(srv)["INBOX"][1]) == len(before["INBOX"][1]) + 1


def test_corrupt_database_is_reconstructed(srv):
    fill(srv)
    before = view(srv)
    srv.stop()
    path = srv.data / "meta.redb"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(bytes((i * 37 + 11) % 256 for i in range(size - 4096)))
    refused_with_hint(srv)
    out = srv.mx("reconstruct").decode()
    assert "the old database is kept as" in out, out
    srv.start()
    assert view(srv) == before


def test_backup_while_running_then_restore_brings_newer_mail_from_files(srv, tmp_path):
    fill(srv)
    at_backup = view(srv)
    bdir = tmp_path / "backup"
    out = srv.mx("backup", str(bdir)).decode()
    assert "message files" in out, out
    # Incremental: a second run copies nothing new.
    assert "(0 copied" in srv.mx("backup", str(bdir)).decode()
    send(srv, 2, "newer")
    # Restore refuses over a running server.
    r = srv.mx_run("restore", str(bdir))
    assert r.returncode != 0 and b"stop it first" in r.stderr
    srv.stop()
    out = srv.mx("restore", str(bdir)).decode()
    assert "2 messages put back from their files" in out, out
    srv.start()
    now = view(srv)
    inbox = now["INBOX"][1]
    newer = inbox[-2:]
    assert all(b"body newer" in m[2] for m in newer), newer
    now["INBOX"] = (now["INBOX"][0], inbox[:-2])
    assert now == at_backup


def test_verify_reports_a_damaged_message_file(srv):
    fill(srv)
    assert "no problems found" in srv.mx("verify").decode()
    victim = sorted(os.listdir(srv.data / "msg"))[0]
    path = srv.data / "msg" / victim
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(bytes(data))
    r = srv.mx_run("verify")
    assert r.returncode != 0
    assert b"does not match the hash" in r.stderr + r.stdout
    # verify changed nothing.
    assert path.read_bytes() == bytes(data)


def test_stray_files_go_to_lost_and_found(srv):
    send(srv, 1)
    srv.stop()
    srv.use_web()
    stray = srv.data / "msg" / "00000000000000aa"
    stray.write_bytes(b"Subject: stray\r\n\r\nnot in any record\r\n")
    srv.start()
    assert not stray.exists()
    kept = srv.data / "lost+found" / "00000000000000aa"
    assert kept.read_bytes() == b"Subject: stray\r\n\r\nnot in any record\r\n"
    # An incident says so on the status page.
    ctx = insecure_tls()
    import json
    import urllib.request

    with urllib.request.urlopen(f"https://{HOST}:{srv.https_port}/status.json", context=ctx, timeout=IO_TIMEOUT) as r:
        page = json.load(r)
    assert "lost+found" in json.dumps(page), page
    shutil.rmtree(srv.data / "lost+found")
