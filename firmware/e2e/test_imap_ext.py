"""IMAP extensions with real clients: BINARY (RFC 3516), MULTIAPPEND (RFC
3502), CATENATE (RFC 4469) and QRESYNC (RFC 7162 3.2). Python's imaplib
where it speaks the extension (APPEND, FETCH BINARY, ENABLE, UID FETCH with
modifiers, a second session changing the mailbox), and a line-level client
where the exact exchange matters (literal8 `~{n}`, several literals in one
APPEND, refusals instead of "+").

The exchanges are those imaptest's scripted tests (binary, append-binary,
multiappend, catenate, catenate-multiappend) check, written here in our
own words and messages. Each test works on a mailbox of its own on the
module's server (test_imap's fixture: max_literal_bytes = 64 KiB).
"""

from __future__ import annotations

import imaplib
import re

from mxlib import HOST, IO_TIMEOUT
from test_imap import (  # noqa: F401  (imap_server is a fixture)
    Account,
    Imap,
    ImapServer,
    IMAP_LIMITS,
    close,
    fetch_literals,
    imap_server,
    imaps,
    new_account,
    raw_imaps,
    select_info,
    status,
)

MAX = IMAP_LIMITS["max_literal_bytes"]


class Imap8(Imap):
    """The line-level client, reading literal8 (`~{n}`) responses too."""

    def response(self, timeout: float | None = None) -> str:
        out = b""
        while True:
            line = self._line(timeout)
            m = re.search(rb"~?\{(\d+)\}\r\n$", line)
            if m:
                out += line + self._exact(int(m[1]))
                continue
            return (out + line[:-2]).decode("utf-8", "surrogateescape")

    def append_parts(self, head: bytes, parts: list[tuple[bytes, bytes]], tail: bytes = b"") -> tuple[str, list[str]]:
        """Sends `tag APPEND head` then, for each (text, literal), the
        text ending in a synchronizing literal announcement and, after "+",
        the literal. Returns the tag and the continuations seen; stops at
        the first response that is not "+" (the tagged refusal)."""
        t = self.tag()
        plus = []
        first = True
        for text, literal in parts:
            prefix = f"{t} APPEND ".encode() + head if first else b""
            first = False
            self.send(prefix + text + b"\r\n")
            r = self.response()
            if not r.startswith("+"):
                return t, plus + [r]
            plus.append(r)
            self.send(literal)
        self.send(tail + b"\r\n")
        return t, plus


def raw8(server: ImapServer, acct: Account) -> Imap8:
    c = Imap8(server.imaps_port, tls=True)
    c.login(acct)
    return c


def lit(data: bytes, binary: bool = False) -> bytes:
    return (b"~" if binary else b"") + b"{%d}" % len(data)


MIXED = (
    b"From: a@example.net\r\n"
    b"Subject: parts\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECbnVsAP8=\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 =3D soft=\r\n"
    b"break   \r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: x-gzip64\r\n"
    b"\r\n"
    b"H4sIAAAAAAAAA\r\n"
    b"--b1--\r\n"
)


def test_binary_fetch_decodes_parts(imap_server):
    acct = new_account(imap_server, "binary")
    m = imaps(imap_server, acct)
    try:
        assert b"BINARY" in m.capability()[1][0].split()
        typ, _ = m.append("INBOX", None, None, MIXED)
        assert typ == "OK"
        m.select("INBOX")
        # imaplib: a plain literal when the decoded part has no NUL.
        typ, data = m.fetch("1", "(BINARY.PEEK[2] BINARY.SIZE[2] FLAGS)")
        assert typ == "OK" and fetch_literals(data) == ["café = softbreak".encode()], data
        assert b"BINARY.SIZE[2] 17" in data[-1] and b"\\Seen" not in data[-1], data
        # BINARY[] is the whole message as stored; BINARY (not PEEK) sets \Seen.
        typ, data = m.fetch("1", "(BINARY[])")
        assert typ == "OK" and fetch_literals(data) == [MIXED]
        typ, data = m.fetch("1", "(FLAGS)")
        assert b"\\Seen" in data[0], data
    finally:
        close(m)
    with raw8(imap_server, acct) as c:
        c.ok("SELECT INBOX")
        # NUL bytes in the decoded part: a literal8 (RFC 3516 4.2).
        r = c.ok("FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])")
        assert r.untagged == ["* 1 FETCH (BINARY[1] ~{8}\r\n\x00\x01\x02nul\x00\udcff BINARY.SIZE[1] 8)"], r
        # A range of the decoded bytes, with its origin; without NUL: {n}.
        r = c.ok("UID FETCH 1:* (BINARY.PEEK[2]<5.4>)")
        assert re.fullmatch(r"\* 1 FETCH \(UID \d+ BINARY\[2\]<5> \{4\}\r\n = s\)", r.untagged[0]), r
        # An encoding the server cannot undo: NO [UNKNOWN-CTE], no FETCH response.
        r = c.cmd("FETCH 1 (BINARY.PEEK[3])")
        assert r.status == "NO" and r.code == "UNKNOWN-CTE" and r.untagged == [], r
        r = c.cmd("FETCH 1 (BINARY.SIZE[3])")
        assert r.status == "NO" and r.code == "UNKNOWN-CTE", r
        # A part that does not exist is empty; BINARY takes part numbers only.
        r = c.ok("FETCH 1 (BINARY.PEEK[7])")
        assert r.untagged == ["* 1 FETCH (BINARY[7] {0}\r\n)"], r
        assert c.cmd("FETCH 1 (BINARY.PEEK[1.HEADER])").status == "BAD"


def test_append_literal8_keeps_nul_bytes(imap_server):
    acct = new_account(imap_server, "literal8")
    body = b"\x00-\xe4\r\n\r\n"
    msg = (
        b"From: a@example.net\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n"
        b"\r\n" + body
    )
    with raw8(imap_server, acct) as c:
        t, plus = c.append_parts(b"INBOX (\\Seen) ", [(lit(msg, True), msg)])
        assert len(plus) == 1 and plus[0].startswith("+"), plus
        r = c.read_until_tagged(t)
        assert r.status == "OK" and r.code.startswith("APPENDUID "), r
        # LITERAL+ form of literal8 too.
        t = c.tag()
        c.send(f"{t} APPEND INBOX ~{{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
        assert c.read_until_tagged(t).status == "OK"
        c.ok("SELECT INBOX")
        r = c.ok("FETCH 1:2 (BINARY.SIZE[1] BINARY.PEEK[1])")
        want = "BINARY.SIZE[1] 7 BINARY[1] ~{7}\r\n" + body.decode("utf-8", "surrogateescape")
        assert r.untagged == [f"* 1 FETCH ({want})", f"* 2 FETCH ({want})"], r
        r = c.ok("FETCH 1 (BINARY.PEEK[])")
        assert r.untagged == [f"* 1 FETCH (BINARY[] ~{{{len(msg)}}}\r\n" + msg.decode("utf-8", "surrogateescape") + ")"]


def test_multiappend_is_all_or_nothing(imap_server):
    acct = new_account(imap_server, "multi")
    one = b"Subject: one\r\n\r\nfirst\r\n"
    two = b"Subject: two\r\n\r\nsecond\r\n"
    with raw8(imap_server, acct) as c:
        before = status(c, "Drafts")
        t, plus = c.append_parts(b"Drafts ", [(lit(one), one), (b" (\\Flagged) " + lit(two), two)])
        assert len(plus) == 2, plus
        r = c.read_until_tagged(t)
        v, n = before["UIDVALIDITY"], before["UIDNEXT"]
        assert r.status == "OK" and r.code == f"APPENDUID {v} {n}:{n + 1}", r
        c.ok("SELECT Drafts")
        r = c.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert r.untagged == [
            # \Recent: this SELECT is the first to see them (RFC 3501 2.3.2).
            "* 1 FETCH (FLAGS (\\Recent) BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: one\r\n\r\n)",
            "* 2 FETCH (FLAGS (\\Recent \\Flagged) BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: two\r\n\r\n)",
        ], r
        # The third message is over the size limit: NO [TOOBIG] instead of
        # "+", and the two before it are not stored either.
        big = b"x" * (MAX + 1)
        t, plus = c.append_parts(b"Drafts ", [(lit(one), one), (b" " + lit(two), two), (b" " + lit(big), big)])
        assert len(plus) == 3 and plus[-1].startswith(f"{t} NO [TOOBIG]"), plus
        # An empty message refused after others were sent with LITERAL+.
        t = c.tag()
        c.send(f"{t} APPEND Drafts {{{len(one)}+}}\r\n".encode() + one + b" {0+}\r\n\r\n")
        r = c.read_until_tagged(t)
        assert r.status == "NO", r
        # A malformed second message: BAD, nothing kept.
        t = c.tag()
        c.send(f"{t} APPEND Drafts {{{len(one)}+}}\r\n".encode() + one + b" junk\r\n")
        assert c.read_until_tagged(t).status == "BAD"
        r = c.ok("NOOP")
        assert status(c, "Drafts")["MESSAGES"] == 2


def test_catenate_builds_messages_from_text_and_urls(imap_server):
    acct = new_account(imap_server, "catenate")
    src = b"From: src@example.net\r\nSubject: source\r\n\r\nsource body\r\n"
    m = imaps(imap_server, acct)
    try:
        typ, data = m.append("INBOX", None, None, src)
        assert typ == "OK"
        validity, uid = re.match(rb"\[APPENDUID (\d+) (\d+)\]", data[0]).groups()
        validity, uid = int(validity), int(uid)
    finally:
        close(m)
    with raw8(imap_server, acct) as c:
        assert "CATENATE" in c.ok("CAPABILITY").untagged[0].split()
        base = f"/INBOX;UIDVALIDITY={validity}/;UID={uid}"
        # URL parts only: no literal at all.
        r = c.cmd(f'APPEND Sent CATENATE (URL "{base}/;SECTION=HEADER" URL "/INBOX/;uid={uid}/;section=TEXT")')
        assert r.status == "OK" and r.code.startswith("APPENDUID"), r
        # TEXT, URL, TEXT; a header of one message and a new body.
        t, plus = c.append_parts(
            b"Sent (\\Seen) ",
            [
                (b"CATENATE (TEXT " + lit(b"X-New: 1\r\n"), b"X-New: 1\r\n"),
                (f' URL "{base}/;SECTION=HEADER.FIELDS%20(SUBJECT)" TEXT '.encode() + lit(b"new body\r\n"), b"new body\r\n"),
            ],
            tail=b")",
        )
        assert len(plus) == 2
        assert c.read_until_tagged(t).status == "OK"
        # Relative to the selected mailbox, with a range of the message.
        c.ok("SELECT INBOX")
        r = c.cmd(f'APPEND Sent CATENATE (URL ";UID={uid}/;PARTIAL=0.20" TEXT {{3+}}\r\nend)')
        assert r.status == "OK", r
        c.ok("SELECT Sent")
        r = c.ok("FETCH 1:* (FLAGS BODY.PEEK[])")
        header = src.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        texts = [header + b"source body\r\n", b"X-New: 1\r\nSubject: source\r\n\r\nnew body\r\n", src[:20] + b"end"]
        assert [u.split("\r\n", 1)[1][:-1].encode() for u in r.untagged] == texts, r
        assert "\\Seen" in r.untagged[1].split("{")[0]
        # Bad URLs: NO [BADURL url] (RFC 4469 6), nothing stored, and a
        # synchronizing TEXT literal after one gets the refusal instead of "+".
        for url in [
            f"/INBOX;UIDVALIDITY={validity + 1}/;UID={uid}",
            f"/INBOX/;UID={uid + 100}",
            f"/Nowhere/;UID={uid}",
            f"/INBOX/;UID={uid}/;SECTION=9.TEXT",
            f"imap://elsewhere.example/INBOX/;UID={uid}",
            f"/INBOX/;UID={uid};URLAUTH=anonymous",
        ]:
            r = c.cmd(f'APPEND Sent CATENATE (URL "{url}")')
            assert r.status == "NO" and r.code == f"BADURL {url}", (url, r)
        t, plus = c.append_parts(
            b"Sent ", [(f'CATENATE (URL "/INBOX/;UID={uid + 100}" TEXT {{5}}'.encode(), b"hello")], tail=b")"
        )
        assert plus == [f"{t} NO [BADURL /INBOX/;UID={uid + 100}] URL does not name a message here"], plus
        # MULTIAPPEND with CATENATE: one bad URL in the second message stores neither.
        r = c.cmd(f'APPEND Sent CATENATE (URL "{base}") CATENATE (URL "/INBOX/;UID={uid + 100}")')
        assert r.status == "NO" and r.code.startswith("BADURL"), r
        r = c.ok("NOOP")
        assert status(c, "Sent")["MESSAGES"] == 3
        # TOOBIG: the parts together over the size limit (RFC 4469 6).
        filler = b"y" * (MAX - 10)
        t, plus = c.append_parts(b"Sent ", [(b"CATENATE (TEXT " + lit(filler), filler)], tail=f' URL "{base}")'.encode())
        r = c.read_until_tagged(t)
        assert r.status == "NO" and r.code == "TOOBIG", r
        assert status(c, "Sent")["MESSAGES"] == 3


def test_qresync_select_vanished_and_changedsince(imap_server):
    acct = new_account(imap_server, "qresync")
    m = imaps(imap_server, acct)
    try:
        for i in range(1, 6):
            assert m.append("INBOX", None, None, f"Subject: q{i}\r\n\r\nbody {i}\r\n".encode())[0] == "OK"
        assert m.enable("QRESYNC")[0] == "OK"
        assert m.response("ENABLED") == ("ENABLED", [b"QRESYNC"])
        typ, _ = m.select("INBOX")
        assert typ == "OK"
        validity = int(m.response("UIDVALIDITY")[1][0])
        modseq = int(m.response("HIGHESTMODSEQ")[1][0])
        typ, data = m.uid("FETCH", "1:*", "(UID)")
        uids = [int(re.search(rb"UID (\d+)", d)[1]) for d in data]
    finally:
        close(m)
    other = imaps(imap_server, acct)
    try:
        other.select("INBOX")
        # A flag change on the 2nd message, the 4th expunged.
        assert other.uid("STORE", str(uids[1]), "+FLAGS", "(\\Flagged)")[0] == "OK"
        assert other.uid("STORE", str(uids[3]), "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert other.expunge()[0] == "OK"
    finally:
        close(other)
    with raw8(imap_server, acct) as c:
        # The parameter needs ENABLE QRESYNC first (RFC 7162 3.2.5).
        r = c.cmd(f"SELECT INBOX (QRESYNC ({validity} {modseq}))")
        assert r.status == "BAD", r
        assert c.ok("ENABLE QRESYNC").untagged == ["* ENABLED QRESYNC"]
        r = c.ok(f"SELECT INBOX (QRESYNC ({validity} {modseq} {uids[0]}:{uids[-1]}))")
        info = select_info(r)
        assert info["EXISTS"] == "4" and int(info["HIGHESTMODSEQ"]) > modseq, r
        assert f"* VANISHED (EARLIER) {uids[3]}" in r.untagged, r
        changed = [u for u in r.untagged if " FETCH " in u]
        assert len(changed) == 1 and re.fullmatch(
            rf"\* 2 FETCH \(UID {uids[1]} FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", changed[0]
        ), r
        # A stale UIDVALIDITY: a plain SELECT, nothing vanished; CLOSED first.
        r = c.ok(f"EXAMINE INBOX (QRESYNC ({validity + 1} 1))")
        assert r.untagged[0].startswith("* OK [CLOSED]"), r
        assert not [u for u in r.untagged if "VANISHED" in u or " FETCH " in u], r
        c.ok("SELECT INBOX")
        # UID FETCH (CHANGEDSINCE m VANISHED): the expunged UID in the set.
        r = c.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
        assert r.untagged[0] == f"* VANISHED (EARLIER) {uids[3]}", r
        assert len(r.untagged) == 2 and f"UID {uids[1]}" in r.untagged[1], r
        assert c.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)").status == "BAD"
        # Once enabled, expunges are VANISHED, not EXPUNGE (RFC 7162 3.2.10).
        c.ok(f"UID STORE {uids[0]},{uids[4]} +FLAGS.SILENT (\\Deleted)")
        r = c.ok("EXPUNGE")
        assert r.untagged == [f"* VANISHED {uids[0]},{uids[4]}"], r
    # Without QRESYNC the same change is EXPUNGE.
    with raw8(imap_server, acct) as c:
        c.ok("SELECT INBOX")
        c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        assert c.ok("EXPUNGE").untagged == ["* 1 EXPUNGE"]
