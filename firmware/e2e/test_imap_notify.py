"""IMAP4rev2 (RFC 9051) and NOTIFY (RFC 5465) with Python's imaplib over
IMAPS: ENABLE IMAP4rev2 and what changes after it, and changes pushed to a
waiting client (a delivery by SMTP, another client's CREATE, APPEND,
EXPUNGE) without the client asking. The exact exchanges are table-tested in
firmware/imap/tests/notify_rev2.rs; these are the same behaviours seen by a
real client against the real binary.

imaplib has no NOTIFY: it is sent with `xatom`, and pushed responses are
read with imaplib's own `readline`.
"""

from __future__ import annotations

import imaplib
import re

import pytest

from mxlib import HOST, IO_TIMEOUT, insecure_tls
from test_imap import ImapServer, deliver, new_account, simple

# NOTIFY is valid when authenticated, a mailbox selected or not (RFC 5465 3).
imaplib.Commands["NOTIFY"] = ("AUTH", "SELECTED")


@pytest.fixture(scope="module")
def imap_server():
    s = ImapServer()
    try:
        s.start()
        yield s
    finally:
        s.teardown()


def login(server, acct) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(HOST, server.imaps_port, ssl_context=insecure_tls(), timeout=IO_TIMEOUT)
    assert m.login(acct.address, acct.password)[0] == "OK"
    return m


def pushed(m: imaplib.IMAP4, n: int = 1) -> list[str]:
    """The next `n` lines the server sends on its own."""
    return [m.readline().decode().rstrip("\r\n") for _ in range(n)]


def uidvalidity(m: imaplib.IMAP4, mailbox: str) -> str:
    typ, data = m.status(mailbox, "(UIDVALIDITY)")
    assert typ == "OK", data
    return re.search(rb"UIDVALIDITY (\d+)", data[0])[1].decode()


def test_rev2_with_imaplib(imap_server):
    acct = new_account(imap_server, "rev2")
    deliver(imap_server, acct.address, simple("rev2-one"), simple("rev2-two"))
    m = login(imap_server, acct)
    try:
        assert "IMAP4REV2" in m.capabilities and "IMAP4REV1" in m.capabilities
        assert any(c.startswith("APPENDLIMIT=") for c in m.capabilities)
        typ, data = m.enable("IMAP4rev2")
        assert typ == "OK", data
        assert m.untagged_responses.pop("ENABLED") == [b"IMAP4rev2"]
        # imaplib sends UTF-8 only after UTF8=ACCEPT (rev2 implies it here).
        typ, _ = m.enable("UTF8=ACCEPT")
        assert typ == "OK"
        typ, data = m.select("INBOX")
        assert typ == "OK" and data == [b"2"]
        # RFC 9051: no RECENT, no OK [UNSEEN], the mailbox's LIST instead.
        assert "RECENT" not in m.untagged_responses
        assert "UNSEEN" not in m.untagged_responses
        assert m.untagged_responses.pop("LIST") == [b'() "/" INBOX']
        # SEARCH answers ESEARCH with the tag; imaplib's SEARCH list stays empty.
        typ, data = m.search(None, "SUBJECT", "rev2-two")
        assert typ == "OK" and data == [None]
        esearch = m.untagged_responses.pop("ESEARCH")
        assert re.fullmatch(rb'\(TAG "\w+"\) ALL 2', esearch[0]), esearch
        # SEARCHRES: the result saved, then used as `$`.
        typ, data = m.search(None, "RETURN", "(SAVE)", "SUBJECT", "rev2-two")
        assert typ == "OK" and "ESEARCH" not in m.untagged_responses
        typ, data = m.fetch("$", "(UID)")
        assert typ == "OK" and data == [b"2 (UID 2)"], data
        # UTF-8 names.
        assert m.create('"Körbe"')[0] == "OK"
        typ, data = m.list('""', "K*")
        assert typ == "OK" and data == [(b'(\\HasNoChildren) "/" {6}', "Körbe".encode()), b""], data
        typ, data = m.status('"Körbe"', "(MESSAGES SIZE DELETED)")
        assert typ == "OK" and data[-1].endswith(b"(MESSAGES 0 SIZE 0 DELETED 0)"), data
        assert m.unselect()[0] == "OK"
    finally:
        m.logout()


def test_notify_pushes_a_delivery_to_a_waiting_client(imap_server):
    """The badge case: INBOX not selected, a message delivered by SMTP,
    STATUS pushed at once."""
    acct = new_account(imap_server, "notify-inbox")
    m = login(imap_server, acct)
    try:
        v = uidvalidity(m, "INBOX")
        typ, data = m.xatom("NOTIFY", "SET STATUS (inboxes (MessageNew MessageExpunge))")
        assert typ == "OK", data
        assert m.untagged_responses.pop("STATUS") == [f"INBOX (MESSAGES 0 UIDNEXT 1 UIDVALIDITY {v})".encode()]
        deliver(imap_server, acct.address, simple("pushed"))
        assert pushed(m) == [f"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v} UNSEEN 1)"]
    finally:
        m.logout()


def test_notify_other_clients_changes_and_the_selected_mailbox(imap_server):
    acct = new_account(imap_server, "notify-two")
    a = login(imap_server, acct)
    b = login(imap_server, acct)
    try:
        assert a.select("INBOX")[0] == "OK"
        typ, data = a.xatom(
            "NOTIFY",
            "SET (selected (MessageNew (UID FLAGS) MessageExpunge)) (personal (MessageNew MessageExpunge MailboxName))",
        )
        assert typ == "OK", data
        # Another client creates a folder and appends to it.
        assert b.create("Projects")[0] == "OK"
        assert pushed(a) == ['* LIST () "/" Projects']
        v = uidvalidity(b, "Projects")
        assert b.append("Projects", None, None, simple("p1"))[0] == "OK"
        assert pushed(a) == [f"* STATUS Projects (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v} UNSEEN 1)"]
        # A delivery into the selected INBOX: EXISTS, RECENT (this session
        # saw it arrive, RFC 3501 2.3.2) and the FETCH asked for.
        deliver(imap_server, acct.address, simple("selected-new"))
        assert pushed(a, 3) == ["* 1 EXISTS", "* 1 RECENT", "* 1 FETCH (UID 1 FLAGS (\\Recent))"]
        # Expunged by the other client: EXPUNGE pushed at once (`selected`).
        assert b.select("INBOX")[0] == "OK"
        assert b.store("1", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
        assert pushed(a) == ["* 1 FETCH (UID 1 FLAGS (\\Recent \\Deleted))"]
        assert b.expunge()[0] == "OK"
        assert pushed(a, 2) == ["* 1 EXPUNGE", "* 0 EXISTS"]
        # Unsupported events: BADEVENT, NOTIFY as it was.
        typ, data = a.xatom("NOTIFY", "SET (personal (MessageNew MessageExpunge AnnotationChange))")
        assert typ == "NO" and data[0].startswith(b"[BADEVENT ("), data
        assert b.delete("Projects")[0] == "OK"
        assert pushed(a) == ['* LIST (\\NonExistent) "/" Projects']
        # NOTIFY NONE, and a NOOP answers with nothing pushed.
        assert a.xatom("NOTIFY", "NONE")[0] == "OK"
        assert b.create("Later")[0] == "OK"
        assert a.noop()[0] == "OK"
        assert "LIST" not in a.untagged_responses
    finally:
        a.logout()
        b.logout()


def test_notify_during_idle(imap_server):
    acct = new_account(imap_server, "notify-idle")
    a = login(imap_server, acct)
    b = login(imap_server, acct)
    try:
        assert b.create("Lists")[0] == "OK"
        assert b.create("Lists/rust")[0] == "OK"
        v = uidvalidity(b, "Lists/rust")
        assert a.select("INBOX")[0] == "OK"
        typ, data = a.xatom("NOTIFY", "SET (subtree Lists (MessageNew MessageExpunge))")
        assert typ == "OK", data
        tag = a._new_tag()
        a.send(tag + b" IDLE\r\n")
        assert a.readline().startswith(b"+ ")
        assert b.append("Lists/rust", None, None, simple("r1"))[0] == "OK"
        assert pushed(a) == [f"* STATUS Lists/rust (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {v} UNSEEN 1)"]
        a.send(b"DONE\r\n")
        assert a.readline().startswith(tag + b" OK")
    finally:
        a.logout()
        b.logout()
